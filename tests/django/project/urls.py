"""Routes of the test project."""

from django.urls import path

from tests.django.project import views

urlpatterns = [
    path("short/", views.short_body, name="short"),
    path("pid/<str:alias>/", views.pid, name="pid"),
    path("background/<str:alias>/", views.background, name="background"),
    path("hold/<str:alias>/", views.hold, name="hold"),
]
