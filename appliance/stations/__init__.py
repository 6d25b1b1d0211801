"""Inspection stations: cameras as a resource, zones and rules, triggers, OK/NG inspection events."""
