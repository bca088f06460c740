# Staff registration numbers live on prescriptions.PharmacistProfile (one place for the rule
# "a registered pharmacist decides"); the support app keeps roles, scoping and 2FA tooling.
