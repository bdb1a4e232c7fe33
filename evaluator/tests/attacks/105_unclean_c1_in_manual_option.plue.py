# attack: a C1 control character in a manual input option
# expect: unclean

def workflow(ctx):
    return Plan(name="ci", triggers=[Trigger.manual(inputs={"env": {"options": ["prod" + chr(0x9B) + "2J"]}})],
                steps=[Step.bash("a", "true")])
