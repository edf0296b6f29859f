import { startTestGateway, type TestGateway, type TestGatewayOptions } from '../../helpers/gateway.js';

export type InProcGateway = TestGateway;

/** The shared test gateway, with the policy-file watch off unless a test turns it on. */
export function startStateGateway(opts: TestGatewayOptions): Promise<InProcGateway> {
  return startTestGateway({ watchConfig: false, ...opts });
}
