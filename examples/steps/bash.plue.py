# Bash steps: outputs flow to dependents through $PLUE_OUTPUT and {{ steps.<id>.outputs.<key> }}.
def workflow():
    return Plan(
        name="Bash steps",
        triggers=[Trigger.manual()],
        steps=[
            Step.bash("version", 'echo "version=1.2.3" >> "$PLUE_OUTPUT"'),
            Step.bash("package", "echo packaging {{ steps.version.outputs.version }}", depends_on=["version"], retries=1, backoff=2),
            Step.bash("notify-failure", "echo something failed", depends_on=["package"], when="failure"),
        ],
    )
