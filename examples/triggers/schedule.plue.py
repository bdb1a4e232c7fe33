# Schedule trigger: a nightly dependency audit at 03:00 UTC on weekdays.
def workflow(ctx):
    return Plan(
        name="Nightly audit",
        triggers=[Trigger.on_schedule("0 3 * * 1-5")],
        steps=[Step.bash("audit", "echo auditing dependencies", timeout=900)],
    )
