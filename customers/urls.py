from django.urls import path

from customers import views

urlpatterns = [
    path("", views.customer_index, name="customer_list"),
    path("new/", views.customer_new, name="customer_new"),
    path("inline/", views.customer_inline_new, name="customer_inline_new"),
    path("<int:pk>/", views.customer_edit, name="customer_edit"),
    path("<int:pk>/archive/", views.customer_archive_toggle, name="customer_archive"),
]
