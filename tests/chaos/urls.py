"""The chaos web server's URLconf (``tests.chaos.settings``): the chaos view and nothing else."""
from django.urls import path

from tests.chaos import web

urlpatterns = [
    path("chaos/order", web.order, name="chaos-order"),
]
