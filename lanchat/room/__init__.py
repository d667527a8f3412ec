"""The parts of a running node, one concern each, wired together by ``lanchat.node``.

Data path: discovery -> membership (who is broker) -> link -> public / private / helpdesk /
offers -> store -> events -> front ends. ``docs/architecture.md`` draws it.
"""
