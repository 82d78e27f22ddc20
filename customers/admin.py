from django.contrib import admin

from customers.models import Customer


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["name", "email", "company", "merchant", "archived_at", "created_at"]
    list_filter = [("archived_at", admin.EmptyFieldListFilter), "merchant"]
    search_fields = ["name", "email", "company"]
    list_select_related = ["merchant"]
    autocomplete_fields = ["merchant"]
