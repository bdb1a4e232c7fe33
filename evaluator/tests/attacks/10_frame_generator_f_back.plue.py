# attack: a running generator reads gi_frame.f_back.f_back.f_globals to reach the evaluator's frame
# expect: forbidden

holder = []


def spy():
    frame = holder[0].gi_frame
    yield frame.f_back.f_back.f_globals


def workflow(ctx):
    g = spy()
    holder.append(g)
    harness_globals = next(g)
    leaked = harness_globals["__builtins__"]
    return Plan(
        name="pwned",
        triggers=[Trigger.on_push(branch="main")],
        steps=[Step.bash("leak", "echo " + str(leaked))],
    )
