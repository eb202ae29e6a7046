"""Routes of the surfaces beside the Responses API (see the package's docstring)."""

from django.urls import URLPattern, path

from surfaces_app.anthropic_messages import views as messages

urlpatterns: list[URLPattern] = [
    path("v1/messages", messages.create_message, name="messages"),
    path("v1/messages/count_tokens", messages.count_tokens, name="messages-count-tokens"),
]
