import pytest
import sqlalchemy as sa
from sqlmodel import Session

from core import audit


def test_the_audit_log_is_append_only_in_the_database(session: Session) -> None:
    entry = audit.record(
        session, actor_id=None, action="test.done", subject_type="test", subject_id=1
    )
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), session.begin_nested():
        session.execute(
            sa.text("UPDATE audit_entry SET action = 'forged' WHERE id = :id"), {"id": entry.id}
        )
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), session.begin_nested():
        session.execute(sa.text("DELETE FROM audit_entry WHERE id = :id"), {"id": entry.id})


def test_audit_entries_filter_by_action_prefix_and_page(session: Session) -> None:
    for n in range(3):
        audit.record(session, actor_id=7, action="user.created", subject_type="user", subject_id=n)
    audit.record(
        session,
        actor_id=7,
        action="organisation.created",
        subject_type="organisation",
        subject_id=1,
    )
    rows, total = audit.list_entries(session, action="user.", limit=2)
    assert total == 3
    assert [r.subject_id for r in rows] == ["2", "1"]  # newest first
