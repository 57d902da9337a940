"""The label store: conversations, proposals, review tasks, annotations, gold labels, audit log."""

from labelloop.store.store import AuditBrokenError, LabelStore

__all__ = ["AuditBrokenError", "LabelStore"]
