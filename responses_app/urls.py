from django.urls import path

from responses_app import views

urlpatterns = [
    path("v1/responses", views.create_response, name="create_response"),
    path("v1/responses/<str:response_id>", views.response_detail, name="response_detail"),
    path("v1/responses/<str:response_id>/input_items", views.response_input_items, name="response_input_items"),
    path("v1/models", views.list_models, name="list_models"),
    path("health", views.health, name="health"),
    path("ready", views.ready, name="ready"),
]
