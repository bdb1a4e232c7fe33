# attack: read a generator's gi_code (co_consts / co_filename) and rebuild it with replace()
# expect: forbidden

def gen():
    yield "safe"


def workflow(ctx):
    g = gen()
    code = g.gi_code
    leaked = (code.co_filename, code.co_consts, code.replace(co_consts=("pwned",)))
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
