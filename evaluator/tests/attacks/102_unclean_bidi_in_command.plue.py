# attack: a bidi override (Trojan Source) that makes a command read differently than it runs
# expect: unclean

def workflow(ctx):
    return Plan(name="ci", steps=[Step.bash("a", "echo safe " + chr(0x202E) + " ; rm -rf ~")])
