// Runs one chat completion with the AzureOpenAI client against an HTTPS gateway whose CA comes
// from NODE_EXTRA_CA_CERTS (set by the parent test). Prints the reply's JSON.
import { AzureOpenAI } from 'openai';

const [endpoint] = process.argv.slice(2);
const client = new AzureOpenAI({ endpoint, apiKey: 'k', apiVersion: '2024-10-21', maxRetries: 0 });
const r = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'tls' }] });
console.log(JSON.stringify(r));
