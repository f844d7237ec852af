"""Stage: answer every question with two agents, resumably.

The Answer Agent (Answer model) writes reasoning and a likely answer, `votes` times; the
Evaluate Agent (Evaluate model) reads the Answer text that agrees with the majority and gives
the final letter; the Error Agent lists every problem. In the output directory:

  stage1.jsonl      every Answer sample the moment it arrives (a crash in stage 2 redoes none)
  trace.jsonl       one line per question: both stages' texts, letters, votes, final answer,
                    its source, timings, and the problems found
  errors.jsonl      one record per problem: API failure, unparseable output, disagreement, no answer
  submission.jsonl  the input in competition format with every question's answer filled
  run.json          what answered: the recipes and overrides, the input, the inference settings,
                    each agent's model and, for a served model, its manifest's recipe and split

Records are keyed by what determines them (prompts, models, sampling), so re-running the same
command sends no request for finished questions and changed settings are never taken for done
work. A question with a request that failed after retries is traced as `failed` and asked again
by the next run; its submission answer falls back to the Answer letter meanwhile.

With `inference.deadline_s`, the run always leaves a submission in time: from DEADLINE_MARGIN_S
before the deadline no request is sent (when its turn comes) and none still awaited is waited
for, no server is started (nor waited for past it), and submission.jsonl is written at once from
what has arrived (the Evaluate letter, else the Answer majority, else the fallback), while
servers may still be stopping. A served model whose server went away (its port refuses) is
asked nothing more either. Such questions are traced `not_asked` and asked by the next run.

The package, one concern a module:

  run.py        infer(): the run record, the scheduler's run, the outputs written and counted
  scheduler.py  which samples to ask, the Answer rounds and the Evaluate step, staged or pipelined
  deadline.py   the deadline guard (on an injectable clock) and servers that went away
  servers.py    the Answer agents and which vLLM server holds which adapters; starting them
  votes.py      the pure rules: temperatures, extra votes, the trace record, the fallback
  summary.py    the table printed at the end
"""

from orchestrator.stages.infer.deadline import DEADLINE_MARGIN_S, Clock, Deadline, MonotonicClock, deadline_margin
from orchestrator.stages.infer.run import infer
from orchestrator.stages.infer.summary import InferSummary
from orchestrator.stages.infer.votes import temperatures, trace_record, wants_extra, with_fallback

__all__ = ["DEADLINE_MARGIN_S", "Clock", "Deadline", "InferSummary", "MonotonicClock", "deadline_margin", "infer",
           "temperatures", "trace_record", "wants_extra", "with_fallback"]
