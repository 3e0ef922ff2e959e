"""Azure Batch's REST API served by the controller (issue 11): SharedKey auth, OData
query options, the routes, the dashboard and /metrics."""
