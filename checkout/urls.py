from django.urls import path

from checkout import claim_views, refund_views, views

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
    path("claims/", claim_views.claims_page, name="claims"),
    path("claims/summary/", claim_views.claims_summary, name="claims_summary"),
    path("claims/prepare/", claim_views.claim_prepare_view, name="claim_prepare"),
    path("claims/<int:pk>/sent/", claim_views.claim_sent_view, name="claim_sent"),
    path("claims/invoice/<int:pk>/", claim_views.invoice_claims, name="invoice_claims"),
]
