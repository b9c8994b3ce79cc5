/**
 * The whole CSR suite again with the native verifier switched off, as on a machine where it was not
 * built (or BATON_NATIVE=off): node:crypto must give every answer csr.test.ts expects.
 */
jest.mock('../../../services/ca/src/pki/native-ec', () => ({
  ...jest.requireActual('../../../services/ca/src/pki/native-ec'),
  nativeEc: null,
}));

import { nativeEc } from '../../../services/ca/src/pki/native-ec';

it('runs without the native verifier', () => {
  expect(nativeEc).toBeNull();
});

require('./csr.test');
