"""Removing a conversation deleted through the API: its rows go in batches, after the request.

DELETE /v1/conversations/{id} hides the conversation at once (every route answers 404 from that
moment) and starts this in the background, in the worker that took the request (a greenlet under
gunicorn, a thread elsewhere: gateway_project.concurrency). Whatever it does not finish (the worker
stopped, the database went away) is left to `manage.py purge_conversations`, which removes every
conversation deleted through the API the same way.
"""

from __future__ import annotations

import logging

from django.db import connections

from conversations_app.api_store import api_conversations
from gateway_project import concurrency

logger = logging.getLogger(__name__)


def start(conversation_id: str) -> None:
    concurrency.start(remove, conversation_id, name=f"remove-{conversation_id}")


def remove(conversation_id: str, *, batch_size: int = 500) -> None:
    try:
        for step in api_conversations.remove_in_batches(conversation_id, batch_size=batch_size):
            logger.debug("removing deleted conversation %s: %s", conversation_id, step)
    except Exception:
        logger.warning("removing deleted conversation %s stopped; purge_conversations will finish it",
                       conversation_id, exc_info=True)
    finally:
        connections.close_all()  # this greenlet's or thread's own connections, back to the pool
