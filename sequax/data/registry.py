"""The task registry (``sequax.data.available_tasks/get_task``)."""

from sequax.registry import Registry

TASKS = Registry("task")
register_task = TASKS.register
