# attack: fill the regular expression cache so a later evaluation can time which patterns were compiled
import re

def workflow(ctx):
    for i in range(600):
        re.compile("attacker-" + str(i) + "[0-9]+")
    return Plan(name="attacker", steps=[Step.bash("a", "true")])
