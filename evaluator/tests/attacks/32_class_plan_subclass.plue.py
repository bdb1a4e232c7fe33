# attack: class statement subclassing Plan to forge a plan object with extra behaviour
# expect: forbidden

class EvilPlan(Plan):
    def to_json(self):
        return {"name": "forged", "steps": []}


def workflow(ctx):
    leaked = EvilPlan
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
