"""Models served and talked to: `llamafactory-cli api` and vLLM servers we start (servers), the
one OpenAI-compatible client (endpoints), the models a stage talks to (agents), which models
answer and evaluate (inference_models), the Answer model's own replies for the Evaluate set
(answer_replies), and the GPU memory a server takes (memory). The top room: it may use all the
others."""
