"""The HTTP side: the registration API, the FHIR REST facade and the web console."""
