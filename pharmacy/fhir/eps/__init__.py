"""The NHS EPS prescription-order profile: one mapping, both directions.

`encode.order_to_bundle` writes a `model.PrescriptionOrder` as a message Bundle,
`decode.bundle_to_order` reads one back, and `mapping.order_from_prescription` builds the
order from our GB prescription. See model.py for the sources the rules come from.
"""
