"""`POST /v1/chat/completions`, OpenAI's Chat Completions API, on the one turn pipeline.

    schema     the request body, validated (a 400 names the Chat parameter: `messages[2].content`)
    translate  that body → a `CreateResponseRequest` (messages → input items, tools, formats)
    render     the turn's Responses object / stream events → `chat.completion` / `chat.completion.chunk`
    views      thin: parse, translate, run (responses_app.http_turns), render

docs/chat-completions.md says what is accepted, mapped, ignored and refused.
"""
