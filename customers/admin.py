from django.contrib import admin

from customers.models import Customer
from merchants.admin_site import IdAutocomplete


@admin.register(Customer)
class CustomerAdmin(IdAutocomplete, admin.ModelAdmin):
    list_display = ["name", "email", "company", "merchant", "archived_at", "created_at"]
    list_filter = [("archived_at", admin.EmptyFieldListFilter), "merchant"]
    search_fields = ["name", "email", "company"]
    list_select_related = ["merchant"]
    autocomplete_fields = ["merchant"]
