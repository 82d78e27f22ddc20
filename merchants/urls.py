from django.urls import path

from merchants import views

urlpatterns = [
    path("business/new/", views.merchant_create_view, name="merchant_create"),
    path("business/switch/", views.merchant_switch, name="merchant_switch"),
    path("settings/", views.merchant_settings, name="merchant_settings"),
    path("settings/team/", views.member_list, name="member_list"),
    path("settings/team/<int:pk>/", views.member_update, name="member_update"),
    path("settings/security/", views.security_log, name="security_log"),
    path("settings/api-keys/", views.api_key_list, name="api_key_list"),
    path("settings/api-keys/<int:pk>/revoke/", views.api_key_revoke_view, name="api_key_revoke"),
]
