"""Request examples of Button's Order API documentation, shared by tests."""

from __future__ import annotations

import hashlib
from typing import Any


def example_create() -> dict[str, Any]:
    """The create-order example of Button's documentation."""
    return {
        "order_id": "ORD-100045",
        "total": 5998,
        "currency": "USD",
        "purchase_date": "2024-05-01T14:03:22Z",
        "btn_ref": "srctok-0123456789abcdef",
        "customer_order_id": "100045",
        "customer": {
            "id": "cust-789",
            "email_sha256": hashlib.sha256(b"someone@example.com").hexdigest(),
            "device_id": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
        },
        "line_items": [
            {
                "identifier": "SKU-RED-M",
                "sku": "SKU-RED-M",
                "description": "Red shirt, M",
                "category": ["Apparel"],
                "quantity": 2,
                "amount": 2999,
                "total": 5998,
                "attributes": {"size": "M"},
            }
        ],
    }
