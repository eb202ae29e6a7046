"""Anthropic's Messages API on the gateway: `POST /v1/messages` and `POST /v1/messages/count_tokens`
(docs/anthropic-messages.md). `schema` validates the body, `translate` makes it a Responses create
request for the one turn pipeline, `render` answers the turn as Anthropic's `Message` or stream."""
