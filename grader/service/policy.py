"""Deadlines and penalties, judged by the server's RECEIPT time (never by when grading finished).

- A student's due date is the assignment's, or their extension's when they have one.
- Late: received after that due date plus the grace period. Then each started day (24 h) after the due date
  costs `late_percent_per_day` percent of the raw score, up to `late_max_percent`.
- After the close date (the extension's due date, if later) no submission is accepted.
- after_due_date questions are shown from the release date (default: the due date), and never before the
  student's own due date: a student with an extension does not see them while still working.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

DAY = 86400.0


@dataclass
class Lateness:
    due_at: Optional[datetime]
    seconds_late: float          # 0 when on time
    days_late: int               # started days after the due date (0 within the grace period)
    penalty_percent: float

    def apply(self, score: float) -> float:
        return round(score * (1.0 - self.penalty_percent / 100.0), 9)

    def as_json(self) -> dict:
        return {"due_at": self.due_at.isoformat() if self.due_at else None, "seconds_late": self.seconds_late,
                "days_late": self.days_late, "penalty_percent": self.penalty_percent}


def student_due(assignment, extension) -> Optional[datetime]:
    if extension is not None:
        return extension.due_at
    return assignment.due_at


def student_close(assignment, extension) -> Optional[datetime]:
    close = assignment.close_at
    if extension is not None and close is not None and extension.due_at > close:
        return extension.due_at
    return close


def lateness(assignment, extension, received_at: datetime) -> Lateness:
    due = student_due(assignment, extension)
    if due is None or received_at <= due:
        return Lateness(due, 0.0, 0, 0.0)
    late = (received_at - due).total_seconds()
    if late <= assignment.late_grace_minutes * 60.0:
        return Lateness(due, late, 0, 0.0)
    days = math.ceil(late / DAY)
    penalty = min(float(assignment.late_max_percent), days * float(assignment.late_percent_per_day))
    return Lateness(due, late, days, max(0.0, penalty))


def release_time(assignment, extension) -> Optional[datetime]:
    """When this student may see after_due_date questions (None: never)."""
    release = assignment.release_at or assignment.due_at
    due = student_due(assignment, extension)
    if release is None:
        return None
    return max(release, due) if due is not None else release


def retry_after(oldest_in_window: datetime, window_minutes: float, now: datetime) -> int:
    free_at = oldest_in_window + timedelta(minutes=window_minutes)
    return max(1, math.ceil((free_at - now).total_seconds()))
