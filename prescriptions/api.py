from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import HasResourceScope, IsClinicClient, clinic_of, principal_of
from accounts.idempotency import idempotent
from api.representation import representation
from events.services import events_for
from patients.api import IDEMPOTENCY_KEY_PARAMETER
from prescriptions import selectors, services
from prescriptions.models import Medication, Prescriber, Prescription, Status
from prescriptions.serializers import (
    CancelInputSerializer,
    MedicationSerializer,
    PrescriberSerializer,
    PrescriptionDetailSerializer,
    PrescriptionInputSerializer,
    PrescriptionSerializer,
)
from saga import cancellation


def _detail(prescription: Prescription) -> dict[str, Any]:
    if not hasattr(prescription, "timeline_events"):  # a new one comes with its timeline
        prescription.timeline_events = events_for(  # type: ignore[attr-defined]  # read by the detail serializer
            aggregate_type="prescription", aggregate_id=prescription.pk
        )
    return representation(PrescriptionDetailSerializer, prescription)


class PrescriptionListCreateApi(generics.ListAPIView):
    permission_classes = [IsClinicClient, HasResourceScope]
    required_scopes = ["prescriptions"]
    serializer_class = PrescriptionSerializer

    def get_queryset(self) -> QuerySet[Prescription]:
        prescriptions = selectors.prescription_list(clinic=clinic_of(self.request))
        wanted = self.request.query_params.get("status")
        if wanted in Status.values:
            prescriptions = prescriptions.filter(status=wanted)
        return prescriptions

    @extend_schema(parameters=[OpenApiParameter("status", str, enum=Status.values, required=False)])
    def get(self, request: Request) -> Response:
        return super().get(request)

    @extend_schema(
        request=PrescriptionInputSerializer,
        responses={201: PrescriptionDetailSerializer},
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    @idempotent
    def post(self, request: Request) -> Response:
        clinic = clinic_of(request)
        serializer = PrescriptionInputSerializer(data=request.data, context={"clinic": clinic})
        serializer.is_valid(raise_exception=True)
        prescription = services.prescription_create(
            clinic=clinic, actor=f"client:{principal_of(request).client_id}", **serializer.validated_data
        )
        # As selectors.prescription_list would read it back (prescription_create's answer).
        return Response(_detail(prescription), status=status.HTTP_201_CREATED)


class PrescriptionDetailApi(generics.RetrieveAPIView):
    permission_classes = [IsClinicClient, HasResourceScope]
    required_scopes = ["prescriptions"]
    serializer_class = PrescriptionDetailSerializer

    def get_queryset(self) -> QuerySet[Prescription]:
        return selectors.prescription_list(clinic=clinic_of(self.request))

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(_detail(self.get_object()))


class PrescriptionCancelApi(APIView):
    permission_classes = [IsClinicClient, HasResourceScope]
    required_scopes = ["prescriptions"]

    @extend_schema(
        request=CancelInputSerializer,
        responses={200: PrescriptionDetailSerializer, 202: PrescriptionDetailSerializer},
        description="200: cancelled. 202: the pharmacy already has the order; its "
        "cancellation is being sent to the gateway, then refunded. The status becomes "
        "`cancelled` once the gateway confirms (a clinic webhook follows).",
    )
    def post(self, request: Request, pk: int) -> Response:
        serializer = CancelInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        clinic = clinic_of(request)
        # The saga wraps the cancel: money is compensated, an acknowledged order is cancelled
        # at the gateway, and a dispensed prescription is answered 409 and queued for staff.
        cancellation.prescription_cancel_request(
            clinic=clinic,
            prescription_id=pk,
            reason=serializer.validated_data["reason"],
            actor=f"client:{principal_of(request).client_id}",
        )
        prescription = selectors.prescription_list(clinic=clinic).get(pk=pk)
        accepted = prescription.status == Status.ACKNOWLEDGED
        return Response(_detail(prescription), status=202 if accepted else 200)


class MedicationListApi(generics.ListAPIView):
    """The formulary. `?search=` matches the name (any part) or the exact code."""

    permission_classes = [IsClinicClient]
    serializer_class = MedicationSerializer

    def get_queryset(self) -> QuerySet[Medication]:
        return selectors.medication_search(search=self.request.query_params.get("search", ""))

    @extend_schema(parameters=[OpenApiParameter("search", str, required=False)])
    def get(self, request: Request) -> Response:
        return super().get(request)


class PrescriberListApi(generics.ListAPIView):
    permission_classes = [IsClinicClient, HasResourceScope]
    required_scopes = ["prescriptions"]
    serializer_class = PrescriberSerializer

    def get_queryset(self) -> QuerySet[Prescriber]:
        return selectors.prescriber_list(clinic=clinic_of(self.request))
