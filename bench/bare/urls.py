from __future__ import annotations

from django.urls import path
from rest_framework import generics, serializers

from bench.bare.models import BareRecord


class BareRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = BareRecord
        fields = ["id", "reference", "name", "code", "quantity", "days", "note", "created_at"]


class BareRecordCreate(generics.CreateAPIView):
    serializer_class = BareRecordSerializer


urlpatterns = [path("records/", BareRecordCreate.as_view())]
