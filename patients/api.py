from django.db.models import QuerySet
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.authentication import HasResourceScope, IsClinicClient, clinic_of, principal_of
from accounts.idempotency import idempotent
from audit.models import PatientAccess
from audit.services import patient_access_record
from patients import selectors, services
from patients.models import Patient
from patients.serializers import PatientInputSerializer, PatientSerializer

IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=True,
    description="Unique per operation (e.g. a UUID), 1-255 printable ASCII characters; "
    "send the same value when retrying. Kept for 24 hours.",
)


class PatientListCreateApi(generics.ListAPIView):
    permission_classes = [IsClinicClient, HasResourceScope]
    required_scopes = ["patients"]
    serializer_class = PatientSerializer

    def get_queryset(self) -> QuerySet[Patient]:
        return selectors.patient_list(clinic=clinic_of(self.request))

    def list(self, request: Request, *args: object, **kwargs: object) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        patient_access_record(
            patients=page or [],
            channel=PatientAccess.Channel.API,
            action=PatientAccess.Action.LIST,
            request=request,
            client_id=principal_of(request).client_id,
        )
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        request=PatientInputSerializer,
        responses={201: PatientSerializer},
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
        description="Registers a patient. The same person registered twice in one clinic (the same NHS "
        "number, or the same given name, family name and date of birth) is refused with 409 and a link "
        "to the existing record in `existing_patient`.",
    )
    @idempotent
    def post(self, request: Request) -> Response:
        serializer = PatientInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            patient = services.patient_create(
                clinic=clinic_of(request),
                actor=f"client:{principal_of(request).client_id}",
                **serializer.validated_data,
            )
        except services.PatientAlreadyRegistered as error:
            error.extensions["existing_patient"] = reverse("patient-detail", kwargs={"pk": error.existing_id})
            raise
        patient = selectors.patient_list(clinic=clinic_of(request)).get(pk=patient.pk)
        return Response(PatientSerializer(patient).data, status=status.HTTP_201_CREATED)


class PatientDetailApi(generics.RetrieveAPIView):
    permission_classes = [IsClinicClient, HasResourceScope]
    required_scopes = ["patients"]
    serializer_class = PatientSerializer

    def get_queryset(self) -> QuerySet[Patient]:
        return selectors.patient_list(clinic=clinic_of(self.request))

    def retrieve(self, request: Request, *args: object, **kwargs: object) -> Response:
        patient = self.get_object()
        patient_access_record(
            patients=[patient],
            channel=PatientAccess.Channel.API,
            action=PatientAccess.Action.DETAIL,
            request=request,
            client_id=principal_of(request).client_id,
        )
        return Response(self.get_serializer(patient).data)
