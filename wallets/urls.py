from django.urls import path

from wallets import views

urlpatterns = [
    path("wallet/", views.wallet_settings, name="wallet_settings"),
    path("wallet/addresses.csv", views.wallet_addresses_csv, name="wallet_addresses_csv"),
    path("balances/", views.balances, name="balances"),
    path("ledger/", views.ledger, name="ledger"),
    path("transfers/", views.transfers, name="transfer_list"),
]
