from django.urls import path

from checkout import refund_views, views

urlpatterns = [
    path("pay/<str:token>/", views.pay, name="pay"),
    path("pay/<str:token>/start/", views.pay_start, name="pay_start"),
    path("payments/invoice/<int:pk>/", views.invoice_payments, name="invoice_payments"),
    # The payer's refund page, by the refund's unguessable token.
    path("refund/<str:token>/", refund_views.refund_page, name="refund_page"),
    path("refunds/invoice/<int:pk>/", refund_views.invoice_refunds, name="invoice_refunds"),
    path(
        "refunds/invoice/<int:pk>/new/", refund_views.invoice_refund_new, name="invoice_refund_new"
    ),
    path(
        "refunds/invoice/<int:pk>/resolve/",
        refund_views.invoice_refund_resolve,
        name="invoice_refund_resolve",
    ),
    path("refunds/<int:pk>/sent/", refund_views.refund_sent, name="refund_sent"),
    path("refunds/<int:pk>/outside/", refund_views.refund_outside, name="refund_outside"),
    path("refunds/<int:pk>/decline/", refund_views.refund_decline_view, name="refund_decline"),
]
