from django.urls import path

from invoices import catalog_views, views, webhook_views

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
    path("invoices/<int:pk>/accept/", views.invoice_accept, name="invoice_accept"),
    path("invoices/<int:pk>/credit/", views.invoice_credit, name="invoice_credit"),
    path("credit-notes/<int:pk>.pdf", views.credit_note_pdf_download, name="credit_note_pdf"),
    path("invoices/preview/", views.invoice_preview, name="invoice_preview"),
    path("invoices/<int:pk>/pdf/", views.invoice_pdf_download, name="invoice_pdf"),
    path("invoices/<int:pk>/receipt/", views.invoice_receipt_download, name="invoice_receipt"),
    path("invoices/<int:pk>/email/", views.invoice_email_preview, name="invoice_email_preview"),
    path("invoices/<int:pk>/send/", views.invoice_send_view, name="invoice_send"),
    path("invoices/emails/<int:pk>/retry/", views.email_retry, name="email_retry"),
    path("settings/taxes/", catalog_views.tax_rate_list, name="tax_rate_list"),
    path("settings/taxes/<int:pk>/", catalog_views.tax_rate_list, name="tax_rate_edit"),
    path("settings/taxes/<int:pk>/delete/", catalog_views.tax_rate_delete, name="tax_rate_delete"),
    path(
        "settings/payment-methods/", catalog_views.payment_method_list, name="payment_method_list"
    ),
    path(
        "settings/payment-methods/<int:pk>/",
        catalog_views.payment_method_list,
        name="payment_method_edit",
    ),
    path(
        "settings/payment-methods/<int:pk>/delete/",
        catalog_views.payment_method_delete,
        name="payment_method_delete",
    ),
    path("settings/webhooks/", webhook_views.webhook_list, name="webhook_list"),
    path("settings/webhooks/<int:pk>/", webhook_views.webhook_detail, name="webhook_detail"),
    path("settings/webhooks/<int:pk>/rotate/", webhook_views.webhook_rotate, name="webhook_rotate"),
    path("settings/webhooks/<int:pk>/test/", webhook_views.webhook_test, name="webhook_test"),
    path(
        "settings/webhooks/invoice-secret/rotate/",
        webhook_views.invoice_signer_rotate,
        name="invoice_signer_rotate",
    ),
    path(
        "callbacks/<int:pk>/redeliver/",
        webhook_views.callback_redeliver_view,
        name="callback_redeliver",
    ),
    # The payer's downloads, by the invoice's unguessable token (the payment page links here).
    path("invoice/<slug:token>.pdf", views.public_invoice_pdf, name="public_invoice_pdf"),
    path("invoice/<slug:token>/receipt.pdf", views.public_receipt_pdf, name="public_receipt_pdf"),
    path(
        "invoices/<int:pk>/<str:action>/",
        views.invoice_action,
        name="invoice_action",
    ),
]
