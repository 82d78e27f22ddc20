from django.urls import path

from invoices import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("invoices/", views.invoice_index, name="invoice_list"),
    path("invoices/new/", views.invoice_new, name="invoice_new"),
    path("invoices/item-row/", views.invoice_item_row, name="invoice_item_row"),
    path("invoices/totals/", views.invoice_totals_preview, name="invoice_totals"),
    path("invoices/<int:pk>/", views.invoice_show, name="invoice_detail"),
    path("invoices/<int:pk>/edit/", views.invoice_edit, name="invoice_edit"),
    path("invoices/<int:pk>/mark-paid/", views.invoice_mark_paid_view, name="invoice_mark_paid"),
    path("invoices/<int:pk>/integration/", views.invoice_integration, name="invoice_integration"),
    path(
        "invoices/<int:pk>/<str:action>/",
        views.invoice_action,
        name="invoice_action",
    ),
]
