from django.urls import path, re_path

from interop.fhir.api import (
    MedicationRequestDetailApi,
    MedicationRequestSearchApi,
    ProcessMessageApi,
    fhir_not_found,
)

urlpatterns = [
    path("$process-message", ProcessMessageApi.as_view(), name="fhir-process-message"),
    path("MedicationRequest", MedicationRequestSearchApi.as_view(), name="fhir-medication-request-search"),
    path(
        "MedicationRequest/<str:resource_id>",
        MedicationRequestDetailApi.as_view(),
        name="fhir-medication-request",
    ),
    re_path(r"^(?P<path>.*)$", fhir_not_found),
]
