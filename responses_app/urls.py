from django.urls import path

from responses_app import views

urlpatterns = [
    path("v1/responses", views.create_response, name="create_response"),
    # Before the {id} route: a response id is never `input_tokens` or `compact` (they all start `resp_`).
    path("v1/responses/input_tokens", views.count_input_tokens, name="count_input_tokens"),
    path("v1/responses/compact", views.compact_response, name="compact_response"),
    path("v1/responses/<str:response_id>", views.response_detail, name="response_detail"),
    path("v1/responses/<str:response_id>/cancel", views.cancel_response, name="cancel_response"),
    path("v1/responses/<str:response_id>/input_items", views.response_input_items, name="response_input_items"),
    path("v1/models", views.list_models, name="list_models"),
    # `path`: model ids may hold a slash (`meta/llama-3`), which the SDK sends as %2F.
    path("v1/models/<path:model_id>", views.model_detail, name="model_detail"),
    path("health", views.health, name="health"),
    path("ready", views.ready, name="ready"),
]
