#!/usr/bin/env bash
# Installs what is missing, builds, and runs Tollgate in front of the built-in mock Azure OpenAI
# backend (no Azure account needed). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
export TOLLGATE_DEMO_BACKEND_KEY=demo-backend-key   # what the gateway sends the mock backends
export TOLLGATE_DEMO_CLIENT_KEY=demo-client-key     # what callers send the gateway
# Two mock resources: a provisioned (PTU) one tried first, and a pay-as-you-go one for spillover.
./build/tollgate-mock --listen 127.0.0.1:18080 --api-key "$TOLLGATE_DEMO_BACKEND_KEY" --name ptu \
  --ptu --deployment gpt-4o-prod=gpt-4o-2024-11-20 --deployment embeddings-prod=text-embedding-3-small \
  --pace-ms 40 >/dev/null &
ptu_pid=$!
./build/tollgate-mock --listen 127.0.0.1:18081 --api-key "$TOLLGATE_DEMO_BACKEND_KEY" --name payg \
  --region "West Europe" --deployment gpt-4o-payg=gpt-4o-2024-11-20 --pace-ms 40 >/dev/null &
payg_pid=$!
trap 'kill $ptu_pid $payg_pid 2>/dev/null || true' EXIT
./build/tollgate --check-config config/demo.yaml
cat <<'MSG'

Tollgate demo: gateway on http://127.0.0.1:8080 (admin/metrics on http://127.0.0.1:9090),
in front of two mock Azure OpenAI resources: a PTU one on 127.0.0.1:18080 (tried first) and a
pay-as-you-go one on 127.0.0.1:18081 (spillover).

Try it:
  curl -s http://127.0.0.1:8080/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21 \
    -H 'content-type: application/json' -H 'api-key: demo-client-key' \
    -d '{"messages":[{"role":"user","content":"Hello"}]}'
  curl -sN http://127.0.0.1:8080/openai/v1/chat/completions -H 'authorization: Bearer demo-client-key' \
    -H 'content-type: application/json' \
    -d '{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Stream"}]}'
  curl -s http://127.0.0.1:9090/metrics | grep tollgate_requests_total
  curl -s 'http://127.0.0.1:9090/admin/usage?group_by=client'          # usage and cost so far

Make the PTU resource answer 429 for 5 s and watch traffic spill over (x-tollgate-backend):
  curl -s http://127.0.0.1:18080/_mock/faults -d '{"status":429,"headers":{"retry-after-ms":"5000"}}'
  curl -si http://127.0.0.1:8080/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21 \
    -H 'api-key: demo-client-key' -H 'content-type: application/json' -d '{"messages":[{"role":"user","content":"Hi"}]}' | grep -i x-tollgate-backend
  curl -s http://127.0.0.1:9090/metrics | grep -E 'tollgate_(backend_state|spillovers|retries)'

From the openai SDK (Node):
  import { AzureOpenAI } from 'openai';
  const client = new AzureOpenAI({ endpoint: 'http://127.0.0.1:8080', apiKey: 'demo-client-key', apiVersion: '2024-10-21' });
  const r = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Hi' }] });

Python: AzureOpenAI(azure_endpoint="http://127.0.0.1:8080", api_key="demo-client-key", api_version="2024-10-21")
Access log lines follow below. Press Ctrl-C to stop.

MSG
./build/tollgate --config config/demo.yaml
