"""Ops pages (server-rendered), one module per page family. Reads go through
``dlq.selectors``, writes through ``dlq.services``, broker status through ``dashboard.ops``;
a view only parses input, calls, and renders. A ``ServiceError`` becomes a Django message on
the re-rendered page, with the error's HTTP status (400, 404, 409, 503).

Roles (``dashboard.views.common.requires``): every page needs ``viewer``; edit, requeue,
discard and resolve need ``operator``; bulk actions, cancelling jobs and schedules need
``admin``, as in the API. Buttons a role may not use are not rendered at all.
"""
