"""Routes of the surfaces beside the Responses API (see the package's docstring)."""

from django.urls import URLPattern, path

from surfaces_app.anthropic_messages import views as messages
from surfaces_app.chat_completions.views import create_chat_completion

urlpatterns: list[URLPattern] = [
    path("v1/chat/completions", create_chat_completion, name="create_chat_completion"),
    path("v1/messages", messages.create_message, name="messages"),
    path("v1/messages/count_tokens", messages.count_tokens, name="messages-count-tokens"),
]
