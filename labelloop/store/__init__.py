"""The label store: conversations, proposals, review tasks, annotations, gold labels, audit log."""

from labelloop.store.review import AnnotationValues, ReviewTransaction, TaskIntent
from labelloop.store.store import AuditBrokenError, LabelStore

__all__ = ["AnnotationValues", "AuditBrokenError", "LabelStore", "ReviewTransaction", "TaskIntent"]
