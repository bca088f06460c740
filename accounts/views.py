"""The OAuth2 token endpoint, with a request budget per address on the shared cache."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from oauth2_provider.views import TokenView

from accounts.budgets import address_of, budget_spent
from api.problems import problem_response


class ThrottledTokenView(TokenView):
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if wait := budget_spent(scope="token", ident=address_of(request), record=True):
            response = problem_response(
                request, 429, "throttled", "Too many token requests from this address; retry later."
            )
            response["Retry-After"] = str(wait)
            return response
        return super().post(request, *args, **kwargs)
