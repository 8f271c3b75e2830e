"""The local stack's process supervisor: start, watch, restart and stop the lab's servers."""

from mlsd.stack.component import Component, RunRecord
from mlsd.stack.supervisor import ComponentStatus, StackError, SupervisionPolicy, Supervisor

__all__ = [
    "Component",
    "ComponentStatus",
    "RunRecord",
    "StackError",
    "SupervisionPolicy",
    "Supervisor",
]
