from django.urls import path

from conversations_app import views

urlpatterns = [
    path("v1/conversations", views.create_conversation, name="create_conversation"),
    path("v1/conversations/<str:conversation_id>", views.conversation_detail, name="conversation_detail"),
    path("v1/conversations/<str:conversation_id>/items", views.conversation_items, name="conversation_items"),
    path("v1/conversations/<str:conversation_id>/items/<str:item_id>", views.conversation_item,
         name="conversation_item"),
]
