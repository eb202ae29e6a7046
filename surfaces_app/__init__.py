"""The API surfaces beside the Responses API: Chat Completions (`surfaces_app.chat_completions`)
and Anthropic's Messages (`surfaces_app.anthropic_messages`).

Each parses its own request body into a `CreateResponseRequest`, runs it through the one turn
pipeline (responses_app.http_turns: routing, limits, storage, the upstream, metrics, traces) and
renders the turn's Responses object or events in its own wire shapes. So any provider type is
reachable from any surface, and nothing about a turn is done twice.
"""
