# attack: 2.6 million unknown pull request actions
# expect: limit

def workflow(ctx):
    return Plan(name="ci", triggers=[Trigger.on_pull_request(actions=["x"] * 2600000)], steps=[Step.bash("a", "true")])
