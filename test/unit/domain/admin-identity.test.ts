import {
  ADMIN_ROLES,
  validateAdminName,
  validateAdminRole,
} from '../../../services/ca/src/domain/admin-identity';
import { errorOf } from '../../support/errors';

const refusal = (f: () => unknown) => {
  const e = errorOf(f);
  return `${e.code} ${e.message}`;
};

describe('admin values (typed input, field-free refusals)', () => {
  it('validateAdminName: lowercase, digits, ".", "-", "_", 1 to 63, not starting with punctuation', () => {
    for (const ok of ['alice', 'a', 'ops.team-1_x', 'a'.repeat(63), 'alice-'])
      expect(validateAdminName(ok)).toBe(ok);
    for (const bad of ['', 'Alice', '-alice', '.a', 'a'.repeat(64), 'al ice', 'alicé']) {
      expect(refusal(() => validateAdminName(bad))).toBe(
        'ERR_BAD_REQUEST invalid admin name: lowercase letters, digits, ".", "-", "_" (at most 63)',
      );
    }
  });

  it('validateAdminRole: one of the roles, exactly; the refusal does not name a field (the edge does)', () => {
    for (const role of ADMIN_ROLES) expect(validateAdminRole(role)).toBe(role);
    for (const bad of ['', 'Admin', 'root', 'constructor', ' admin']) {
      expect(refusal(() => validateAdminRole(bad))).toBe('ERR_BAD_REQUEST one of admin, operator, auditor');
    }
  });
});
