from django.urls import path

from checkout import views

urlpatterns = [
    path("pay/<str:token>/", views.pay, name="pay"),
    path("pay/<str:token>/start/", views.pay_start, name="pay_start"),
    path("payments/invoice/<int:pk>/", views.invoice_payments, name="invoice_payments"),
]
