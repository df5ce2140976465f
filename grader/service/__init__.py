"""The grader's service side: courses, submissions graded on receipt, feedback, gradebook, regrades.

`cnnspec serve` runs the web API (FastAPI) over one database (SQLite in a data directory, or PostgreSQL);
`cnnspec worker` runs grading jobs from PostgreSQL (procrastinate); `cnnspec submit` is the client. Nothing
here is imported unless one of those commands runs, so `cnnspec check` stays light. See docs/service.md.

Modules: settings (configuration, clock), models (tables), db (engine, migrations), security (passwords,
tokens, sessions), store (assignment uploads), policy (lateness, rate limits), grading (service-side grading
through grader's public API), jobs (the queue: procrastinate on PostgreSQL, an in-process thread on SQLite),
app + api/ (HTTP), client (the `submit` command), cli (argument parsing).
"""
