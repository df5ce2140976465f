"""HTTP routes under /api/v1, one module per resource; common.py holds authentication and access checks."""
